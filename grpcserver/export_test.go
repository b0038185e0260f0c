package grpcserver

// Generations returns how many grpc.Servers s holds that have not stopped.
func Generations(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.gens)
}
