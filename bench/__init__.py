"""`make bench`: throughput and latency of gengate against a bare baseline (see __main__)."""
