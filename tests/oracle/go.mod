module podcert-signer/tests/oracle

go 1.22
