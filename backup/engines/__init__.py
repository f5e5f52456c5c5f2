"""Database engines: the client programs, their sandboxing, and throwaway servers for drills,
restores and the demo."""
