"""gRPC servicers of the coordinator: thin layers that validate requests, call
the domain and storage code, and turn their errors into status codes."""
