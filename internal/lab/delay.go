package lab

import (
	"errors"
	"time"
)

type delayMode int

const (
	modeIngress delayMode = iota + 1 // tap at the receiver, originals dropped on its ingress
	modeEgress                       // originals diverted on the sender's egress
)

const (
	delayMAC  = "02:dd:1a:b0:00:01"
	delayMark = 0x64646c79
)

type delayElement struct {
	mode  delayMode
	capIf string
}

func (d *delayElement) close() {}

// SetDelay delays by d the IP packets leaving node from on link l. 0
// removes the delay.
func (f *Fabric) SetDelay(l Link, from string, d time.Duration) error {
	_ = time.Second
	return errors.New("lab: delay not implemented yet")
}
