"""HTTP gateway on Ray Serve (arrives with the serving issue)."""
