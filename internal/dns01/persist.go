package dns01

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// PersistTTL is the TTL the zone file line of a dns-persist-01 record suggests: the record is
// long-lived, an hour of caching is harmless.
const PersistTTL = 3600

// PersistLabel is the label dns-persist-01 records live under (draft-ietf-acme-dns-persist).
const PersistLabel = "_validation-persist"

// PersistRecordName returns the fully qualified name of the dns-persist-01 record of dnsName:
// "_validation-persist.<name>.", without the "*." of a wildcard (a wildcard and its base name
// share one record, which then needs policy=wildcard).
func PersistRecordName(dnsName string) string {
	return PersistLabel + "." + strings.TrimSuffix(strings.TrimPrefix(dnsName, "*."), ".") + "."
}

// PersistRecord is the content of a dns-persist-01 TXT record: an RFC 8659 issue-value whose
// issuer-domain-name names the CA, with the parameters the draft defines.
type PersistRecord struct {
	// IssuerDomainName is one of the challenge's issuer-domain-names ("letsencrypt.org").
	IssuerDomainName string
	// AccountURI is the ACME account's URL: only that account may use the record.
	AccountURI string
	// Wildcard adds policy=wildcard: the record then also validates "*.<name>".
	Wildcard bool
	// PersistUntil, when not zero, adds persistuntil=<unix seconds>: the CA refuses the record
	// after it.
	PersistUntil time.Time
}

// Value is the record's TXT value, as the draft writes it:
// "<issuer-domain-name>; accounturi=<uri>[; policy=wildcard][; persistuntil=<unix>]".
func (r PersistRecord) Value() string {
	var b strings.Builder
	b.WriteString(r.IssuerDomainName)
	b.WriteString("; accounturi=")
	b.WriteString(r.AccountURI)
	if r.Wildcard {
		b.WriteString("; policy=wildcard")
	}
	if !r.PersistUntil.IsZero() {
		b.WriteString("; persistuntil=")
		b.WriteString(strconv.FormatInt(r.PersistUntil.Unix(), 10))
	}
	return b.String()
}

// ZoneFileLine is the record as a zone file line (BIND and most DNS consoles accept it): name,
// TTL, class, type and the value quoted, split in strings of at most 255 bytes.
func ZoneFileLine(fqdn, value string, ttl int) string {
	var parts []string
	for len(value) > 255 {
		parts = append(parts, strconv.Quote(value[:255]))
		value = value[255:]
	}
	parts = append(parts, strconv.Quote(value))
	return fmt.Sprintf("%s %d IN TXT %s", fqdn, ttl, strings.Join(parts, " "))
}

// ParsePersistRecord parses a TXT value as the CA does (Pebble's VA, after RFC 8659): the
// issuer-domain-name before the first ";", then tag=value parameters separated by ";" with
// optional spaces and tabs, tags matched case-insensitively, each at most once, values of
// printable ASCII without ";" or spaces. accounturi is mandatory; a policy other than wildcard
// (case-insensitive) counts as absent; persistuntil is a decimal Unix time. Unknown tags are
// ignored.
func ParsePersistRecord(value string) (PersistRecord, error) {
	parts := strings.Split(value, ";")
	record := PersistRecord{IssuerDomainName: trimWSP(parts[0])}
	if record.IssuerDomainName == "" {
		return record, errors.New("no issuer-domain-name")
	}
	seen := map[string]bool{}
	for _, param := range parts[1:] {
		param = trimWSP(param)
		if param == "" {
			return record, errors.New("empty parameter or trailing semicolon")
		}
		tag, val, ok := strings.Cut(param, "=")
		if !ok {
			return record, fmt.Errorf("parameter %q is not tag=value", param)
		}
		tag, val = trimWSP(tag), trimWSP(val)
		if tag == "" {
			return record, fmt.Errorf("parameter %q has an empty tag", param)
		}
		canonical := strings.ToLower(tag)
		if seen[canonical] {
			return record, fmt.Errorf("duplicate parameter %q", tag)
		}
		seen[canonical] = true
		for _, r := range val {
			if (r < 0x21 || r > 0x7E) || r == ';' {
				return record, fmt.Errorf("value %q of %q has a character the draft does not allow", val, tag)
			}
		}
		switch canonical {
		case "accounturi":
			if val == "" {
				return record, errors.New("empty accounturi")
			}
			record.AccountURI = val
		case "policy":
			record.Wildcard = strings.EqualFold(val, "wildcard")
		case "persistuntil":
			seconds, err := strconv.ParseInt(val, 10, 64)
			if err != nil {
				return record, fmt.Errorf("persistuntil %q is not a Unix time", val)
			}
			record.PersistUntil = time.Unix(seconds, 0).UTC()
		}
	}
	if record.AccountURI == "" {
		return record, errors.New("no accounturi parameter")
	}
	return record, nil
}

func trimWSP(s string) string {
	return strings.TrimFunc(s, func(r rune) bool { return r == ' ' || r == '\t' })
}

// PersistVerdict is what a CA would conclude from the TXT records at a dns-persist-01 name.
type PersistVerdict string

// Verdicts, each a condition reason.
const (
	// PersistAccepted: a record authorizes the account (Record is it).
	PersistAccepted PersistVerdict = "Accepted"
	// PersistMissing: no record names the CA.
	PersistMissing PersistVerdict = "PersistRecordRequired"
	// PersistWrongAccount: the CA's record names another account (a new account key, or
	// another ACME server).
	PersistWrongAccount PersistVerdict = "PersistRecordAccountMismatch"
	// PersistNoWildcardPolicy: the record lacks policy=wildcard and a wildcard needs it.
	PersistNoWildcardPolicy PersistVerdict = "PersistRecordNoWildcardPolicy"
	// PersistExpired: the record's persistuntil has passed.
	PersistExpired PersistVerdict = "PersistRecordExpired"
	// PersistMalformed: the CA's record does not parse.
	PersistMalformed PersistVerdict = "PersistRecordMalformed"
)

// PersistEvaluation is the verdict with the record it is about.
type PersistEvaluation struct {
	Verdict PersistVerdict
	// Record is the record accepted or refused (zero for PersistMissing and PersistMalformed).
	Record PersistRecord
	// Detail says what is wrong, for messages.
	Detail string
}

// EvaluatePersist decides as the CA does whether values (the TXT records at the name) let
// accountURI validate the name (wildcard: "*.<name>") at time at, for a CA whose
// issuer-domain-names are issuers: records naming other issuers are ignored; the first record
// that authorizes wins; else a malformed record is reported first, then the first refusal.
func EvaluatePersist(values, issuers []string, accountURI string, wildcard bool, at time.Time) PersistEvaluation {
	var malformed, refused *PersistEvaluation
	for _, value := range values {
		issuer, _, _ := strings.Cut(value, ";")
		if !slices.Contains(issuers, trimWSP(issuer)) {
			continue
		}
		record, err := ParsePersistRecord(value)
		evaluation := PersistEvaluation{Record: record}
		switch {
		case err != nil:
			evaluation.Verdict, evaluation.Detail = PersistMalformed, fmt.Sprintf("%q: %v", value, err)
			if malformed == nil {
				malformed = &evaluation
			}
			continue
		case record.AccountURI != accountURI:
			evaluation.Verdict = PersistWrongAccount
			evaluation.Detail = fmt.Sprintf("it names account %s, but the issuer's ACME account is %s", record.AccountURI, accountURI)
		case wildcard && !record.Wildcard:
			evaluation.Verdict = PersistNoWildcardPolicy
			evaluation.Detail = "it lacks policy=wildcard, which the wildcard name needs"
		case !record.PersistUntil.IsZero() && at.After(record.PersistUntil):
			evaluation.Verdict = PersistExpired
			evaluation.Detail = fmt.Sprintf("its persistuntil %s has passed", record.PersistUntil.UTC().Format(time.RFC3339))
		default:
			evaluation.Verdict = PersistAccepted
			return evaluation
		}
		if refused == nil {
			refused = &evaluation
		}
	}
	switch {
	case malformed != nil:
		return *malformed
	case refused != nil:
		return *refused
	}
	return PersistEvaluation{Verdict: PersistMissing, Detail: fmt.Sprintf("no record names the CA (%s)", strings.Join(issuers, ", "))}
}
