"""Benchmarks of breakglass against direct OpenSSH on 127.0.0.1 (see README.md)."""
