package controlplane

import (
	"sync"

	"github.com/hac-project/hac/internal/store"
)

// accountsCache keeps what requests read from tokens, users and servers
// (who a token is, a server token's server) while those tables stand
// still: any commit that writes one of them (a revocation, a new token, a
// server's state) moves store.AccountsGeneration, and the next lookup
// starts afresh. Only rows that exist are kept, so a stranger's guesses
// cannot fill it; it is bounded all the same.
type accountsCache[V any] struct {
	mu  sync.Mutex
	gen uint64
	m   map[string]V
}

// maxCachedAccounts bounds each cache; past it, it starts afresh.
const maxCachedAccounts = 1 << 16

// get returns the value kept for key at generation gen, read before the
// value was: a value read across a commit is kept under the older
// generation, and so dropped.
func (c *accountsCache[V]) get(gen uint64, key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen < c.gen {
		var zero V
		return zero, false // read before the last flush: a miss, and no flush back
	}
	c.moveTo(gen)
	v, ok := c.m[key]
	return v, ok
}

// put keeps v for key, read from the store at generation gen (read
// before v).
func (c *accountsCache[V]) put(gen uint64, key string, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen < c.gen {
		return
	}
	c.moveTo(gen)
	if len(c.m) >= maxCachedAccounts {
		clear(c.m)
	}
	c.m[key] = v
}

func (c *accountsCache[V]) moveTo(gen uint64) {
	if c.m == nil || gen != c.gen {
		c.m, c.gen = map[string]V{}, gen
	}
}

// cachedToken is a token as authenticate resolves it.
type cachedToken struct {
	tok  store.Token
	user store.User
}
