"""Live viewer: a client of the daemon and engine sockets only (pyqtgraph + PySide6)."""
