"""Farm rules that know neither gRPC nor SQL: frame specs, task states."""
