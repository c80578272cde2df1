"""The HTTP edge: what a route handler works with (``context``), the handlers, and the request
bodies, answers and records they share."""
