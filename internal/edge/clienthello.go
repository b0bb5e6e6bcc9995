package edge

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// helloInfo is what a splicer's route decision reads from a ClientHello: the server name and
// the offered ALPN protocols.
type helloInfo struct {
	serverName string
	protocols  cryptobyte.String // the ALPN extension's protocol list, checked; empty without one
}

// offers reports whether the hello offers the ALPN protocol.
func (h *helloInfo) offers(protocol string) bool {
	for list := h.protocols; !list.Empty(); {
		var offered cryptobyte.String
		if !list.ReadUint8LengthPrefixed(&offered) {
			return false
		}
		if string(offered) == protocol {
			return true
		}
	}
	return false
}

// Limits and codes of the TLS record layer and handshake (RFC 8446) as crypto/tls applies
// them to a ClientHello.
const (
	recordTypeAlert     = 21
	recordTypeHandshake = 22
	maxPlaintext        = 16 << 10
	maxUselessRecords   = 16 // consecutive warning alerts dropped before a hello
	alertLevelWarning   = 1
	alertCloseNotify    = 0
)

var (
	errHelloIncomplete = errors.New("tls: ClientHello incomplete")
	errHelloMalformed  = errors.New("tls: malformed ClientHello")
)

// parseHello parses the ClientHello at the start of data (helloFramed: whole), possibly
// spread over several records, as crypto/tls's server reads it before it asks for its
// configuration (GetConfigForClient), and refuses what crypto/tls refuses there: records
// that are not TLS (SSLv2 framing, a type other than handshake or alert, a version from
// 0x1000), oversized records and messages, alerts other than warnings (and more than 16
// warnings in a row), empty handshake records, a first message other than a ClientHello,
// and a ClientHello crypto/tls cannot unmarshal (helloMessage). The server name is the
// client's bytes, as crypto/tls gives them. Bytes after the hello are not read.
func parseHello(data []byte) (helloInfo, error) {
	var message []byte // the handshake bytes of the records read; usually within data
	gathered := false  // whether message is a copy (the hello came in several records)
	useless := 0
	for {
		if len(message) >= 4 {
			length := 4 + (int(message[1])<<16 | int(message[2])<<8 | int(message[3]))
			if length > maxHelloMessage {
				return helloInfo{}, fmt.Errorf("tls: handshake message of length %d bytes exceeds maximum of %d bytes", length-4, maxHelloMessage-4)
			}
			if len(message) >= length {
				return helloMessage(message[:length])
			}
		}
		if len(data) < 5 {
			return helloInfo{}, errHelloIncomplete
		}
		typ, version, length := data[0], int(data[1])<<8|int(data[2]), int(data[3])<<8|int(data[4])
		switch {
		case typ == 0x80:
			return helloInfo{}, errors.New("tls: unsupported SSLv2 handshake received")
		case typ != recordTypeAlert && typ != recordTypeHandshake || version >= 0x1000:
			return helloInfo{}, errors.New("tls: first record does not look like a TLS handshake")
		case length > maxRecordLength:
			return helloInfo{}, fmt.Errorf("tls: oversized record received with length %d", length)
		case len(data) < 5+length:
			return helloInfo{}, errHelloIncomplete
		case length > maxPlaintext:
			return helloInfo{}, errors.New("tls: record overflow")
		}
		payload := data[5 : 5+length]
		data = data[5+length:]
		if typ == recordTypeAlert {
			if length != 2 || payload[1] == alertCloseNotify || payload[0] != alertLevelWarning {
				return helloInfo{}, errors.New("tls: alert before the ClientHello")
			}
			if useless++; useless > maxUselessRecords {
				return helloInfo{}, errors.New("tls: too many ignored records")
			}
			continue
		}
		if length == 0 {
			return helloInfo{}, errors.New("tls: empty handshake record")
		}
		useless = 0
		switch {
		case message == nil:
			message = payload
		case !gathered:
			message = append(append(make([]byte, 0, 2*len(message)+len(payload)), message...), payload...)
			gathered = true
		default:
			message = append(message, payload...)
		}
	}
}

// TLS handshake and extension codes (RFC 8446 and the RFCs of each extension).
const (
	typeClientHello                  = 1
	extensionServerName              = 0
	extensionStatusRequest           = 5
	extensionSupportedCurves         = 10
	extensionSupportedPoints         = 11
	extensionSignatureAlgorithms     = 13
	extensionALPN                    = 16
	extensionSCT                     = 18
	extensionExtendedMasterSecret    = 23
	extensionSessionTicket           = 35
	extensionPreSharedKey            = 41
	extensionEarlyData               = 42
	extensionSupportedVersions       = 43
	extensionCookie                  = 44
	extensionPSKModes                = 45
	extensionSignatureAlgorithmsCert = 50
	extensionKeyShare                = 51
	extensionQUICTransportParameters = 57
	extensionRenegotiationInfo       = 0xff01
	extensionEncryptedClientHello    = 0xfe0d
)

// helloMessage reads a whole ClientHello handshake message with crypto/tls's rules
// (clientHelloMsg.unmarshal): every extension crypto/tls knows must be well formed and
// consumed exactly, none may repeat, pre_shared_key comes last, a server name has no
// trailing dot and comes once; then an encrypted_client_hello extension must be well formed
// (crypto/tls, without ECH keys, goes on with the outer hello).
func helloMessage(message []byte) (helloInfo, error) {
	if message[0] != typeClientHello {
		return helloInfo{}, fmt.Errorf("tls: first handshake message of type %d, not a ClientHello", message[0])
	}
	var hello helloInfo
	s := cryptobyte.String(message[4:])
	var ignored, cipherSuites, extensions, ech cryptobyte.String
	if !s.Skip(2+32) || !s.ReadUint8LengthPrefixed(&ignored) || // version, random, session id
		!s.ReadUint16LengthPrefixed(&cipherSuites) || len(cipherSuites)%2 != 0 ||
		!s.ReadUint8LengthPrefixed(&ignored) { // compression methods
		return helloInfo{}, errHelloMalformed
	}
	if s.Empty() {
		return hello, nil // no extensions
	}
	if !s.ReadUint16LengthPrefixed(&extensions) || !s.Empty() {
		return helloInfo{}, errHelloMalformed
	}
	var seen extensionSet
	for !extensions.Empty() {
		var extension uint16
		var data cryptobyte.String
		if !extensions.ReadUint16(&extension) || !extensions.ReadUint16LengthPrefixed(&data) || !seen.add(extension) {
			return helloInfo{}, errHelloMalformed
		}
		ok := true
		switch extension {
		case extensionServerName:
			var names cryptobyte.String
			ok = data.ReadUint16LengthPrefixed(&names) && !names.Empty()
			for ok && !names.Empty() {
				var nameType uint8
				var name cryptobyte.String
				ok = names.ReadUint8(&nameType) && names.ReadUint16LengthPrefixed(&name) && !name.Empty()
				if ok && nameType == 0 { // host_name
					ok = hello.serverName == "" && name[len(name)-1] != '.'
					hello.serverName = string(name)
				}
			}
		case extensionStatusRequest:
			var statusType uint8
			ok = data.ReadUint8(&statusType) && data.ReadUint16LengthPrefixed(&ignored) && data.ReadUint16LengthPrefixed(&ignored)
		case extensionSupportedCurves, extensionSignatureAlgorithms, extensionSignatureAlgorithmsCert:
			ok = data.ReadUint16LengthPrefixed(&ignored) && !ignored.Empty() && len(ignored)%2 == 0
		case extensionSupportedPoints:
			ok = data.ReadUint8LengthPrefixed(&ignored) && !ignored.Empty()
		case extensionSessionTicket, extensionQUICTransportParameters:
			data = nil
		case extensionRenegotiationInfo, extensionPSKModes:
			ok = data.ReadUint8LengthPrefixed(&ignored)
		case extensionExtendedMasterSecret, extensionSCT, extensionEarlyData:
		case extensionALPN:
			var list cryptobyte.String
			ok = data.ReadUint16LengthPrefixed(&list) && !list.Empty()
			hello.protocols = list
			for ok && !list.Empty() {
				var protocol cryptobyte.String
				ok = list.ReadUint8LengthPrefixed(&protocol) && !protocol.Empty()
			}
		case extensionSupportedVersions:
			ok = data.ReadUint8LengthPrefixed(&ignored) && !ignored.Empty() && len(ignored)%2 == 0
		case extensionCookie:
			ok = data.ReadUint16LengthPrefixed(&ignored) && !ignored.Empty()
		case extensionKeyShare:
			var shares cryptobyte.String
			ok = data.ReadUint16LengthPrefixed(&shares)
			for ok && !shares.Empty() {
				ok = shares.Skip(2) && shares.ReadUint16LengthPrefixed(&ignored) && !ignored.Empty()
			}
		case extensionPreSharedKey:
			var identities, binders cryptobyte.String
			ok = extensions.Empty() && data.ReadUint16LengthPrefixed(&identities) && !identities.Empty()
			for ok && !identities.Empty() {
				ok = identities.ReadUint16LengthPrefixed(&ignored) && !ignored.Empty() && identities.Skip(4)
			}
			ok = ok && data.ReadUint16LengthPrefixed(&binders) && !binders.Empty()
			for ok && !binders.Empty() {
				ok = binders.ReadUint8LengthPrefixed(&ignored) && !ignored.Empty()
			}
		case extensionEncryptedClientHello:
			ech, data = data, nil
		default:
			continue // crypto/tls ignores extensions it does not know
		}
		if !ok || !data.Empty() {
			return helloInfo{}, errHelloMalformed
		}
	}
	if !validECHExtension(ech) {
		return helloInfo{}, errors.New("tls: invalid encrypted_client_hello extension")
	}
	return hello, nil
}

// validECHExtension reports whether crypto/tls takes an encrypted_client_hello extension's
// data (parseECHExt): an empty one is ignored, an inner one is the type byte alone, an outer
// one holds a cipher suite, a config id, and the encapsulated key and payload.
func validECHExtension(data cryptobyte.String) bool {
	if data.Empty() {
		return true
	}
	var echType uint8
	var ignored cryptobyte.String
	data.ReadUint8(&echType)
	switch echType {
	case 1: // inner
		return data.Empty()
	case 0: // outer
		return data.Skip(2+2+1) && data.ReadUint16LengthPrefixed(&ignored) && data.ReadUint16LengthPrefixed(&ignored)
	}
	return false
}

// extensionSet records the extension codes seen in a hello: a handful usually, kept in an
// array; a map once there are more.
type extensionSet struct {
	few  [24]uint16
	n    int
	many map[uint16]bool
}

// add records code and reports whether it was new.
func (e *extensionSet) add(code uint16) bool {
	if e.many != nil {
		if e.many[code] {
			return false
		}
		e.many[code] = true
		return true
	}
	for _, seen := range e.few[:e.n] {
		if seen == code {
			return false
		}
	}
	if e.n < len(e.few) {
		e.few[e.n] = code
		e.n++
		return true
	}
	e.many = make(map[uint16]bool, 2*len(e.few))
	for _, seen := range e.few {
		e.many[seen] = true
	}
	e.many[code] = true
	return true
}
