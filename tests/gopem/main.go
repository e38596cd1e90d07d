// gopem: the reference for csr-signer's PEM reader (src/pem.rs). Standard library only.
//
// Protocol: stdin has one input per line, hex-encoded. For each, stdout gets one line with what Go's
// encoding/pem.Decode returns, every byte string hex-encoded behind an "x" (so that an empty one is
// still a field):
//
//	none x<rest>
//	block x<type> x<bytes> x<rest> [x<key>=x<value> ...]   (headers sorted by key)
//
// A line "cert:<hex DER>" is parsed with crypto/x509.ParseCertificate instead, answered by
// "ok x<subject as Go prints it>" or "error x<message>".
//
// Output is flushed after each line, so a caller can stream inputs one at a time.
package main

import (
	"bufio"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"sort"
	"strings"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	out := bufio.NewWriter(os.Stdout)
	for in.Scan() {
		line, isCert := strings.CutPrefix(in.Text(), "cert:")
		data, err := hex.DecodeString(line)
		if err != nil {
			fmt.Fprintln(os.Stderr, "gopem: input line is not hex:", err)
			os.Exit(2)
		}
		if isCert {
			if cert, err := x509.ParseCertificate(data); err != nil {
				fmt.Fprintf(out, "error x%x\n", err.Error())
			} else {
				fmt.Fprintf(out, "ok x%x\n", cert.Subject.String())
			}
			if err := out.Flush(); err != nil {
				os.Exit(3)
			}
			continue
		}
		block, rest := pem.Decode(data)
		if block == nil {
			fmt.Fprintf(out, "none x%x\n", rest)
		} else {
			fmt.Fprintf(out, "block x%x x%x x%x", block.Type, block.Bytes, rest)
			keys := make([]string, 0, len(block.Headers))
			for k := range block.Headers {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				fmt.Fprintf(out, " x%x=x%x", k, block.Headers[k])
			}
			fmt.Fprintln(out)
		}
		if err := out.Flush(); err != nil {
			os.Exit(3)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "gopem:", err)
		os.Exit(2)
	}
}
