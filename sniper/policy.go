package sniper

import "container/list"

// Key names one expert of one layer (Expert is 0 for a dense layer's FFN).
type Key struct {
	Layer  int
	Expert int
}

// Policy decides which resident expert to evict when the cache needs room. The sniper calls it under
// its lock, so implementations need no locking of their own.
type Policy interface {
	// Touched records a use (a hit, or a load).
	Touched(k Key)
	// Removed forgets k (it was evicted).
	Removed(k Key)
	// Victim returns the resident expert to evict next among those for which evictable is true.
	Victim(evictable func(Key) bool) (Key, bool)
}

// LRU evicts the expert used least recently.
type LRU struct {
	order *list.List // front = most recent
	elems map[Key]*list.Element
}

// NewLRU returns an empty LRU policy.
func NewLRU() *LRU { return &LRU{order: list.New(), elems: map[Key]*list.Element{}} }

var _ Policy = (*LRU)(nil)

func (l *LRU) Touched(k Key) {
	if e, ok := l.elems[k]; ok {
		l.order.MoveToFront(e)
		return
	}
	l.elems[k] = l.order.PushFront(k)
}

func (l *LRU) Removed(k Key) {
	if e, ok := l.elems[k]; ok {
		l.order.Remove(e)
		delete(l.elems, k)
	}
}

func (l *LRU) Victim(evictable func(Key) bool) (Key, bool) {
	for e := l.order.Back(); e != nil; e = e.Prev() {
		k := e.Value.(Key)
		if evictable(k) {
			return k, true
		}
	}
	return Key{}, false
}
