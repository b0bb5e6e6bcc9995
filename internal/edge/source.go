package edge

import "context"

// Source feeds a ChallengeStore from where the challenge responses live (SecretSource,
// DirSource). Run blocks until ctx is done and then returns nil; it returns an error early only
// when the source cannot work at all. One source feeds one store: each update replaces the
// store's whole content.
type Source interface {
	Run(ctx context.Context) error
}

var (
	_ Source = (*SecretSource)(nil)
	_ Source = (*DirSource)(nil)
)
