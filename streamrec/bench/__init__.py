"""streamrec bench: the runtime's own code paths timed, reported as tables and figures."""
