module csr-signer/tests/gopem

go 1.22
