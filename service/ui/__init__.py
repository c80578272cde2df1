"""Pages for people: the views of ``/ui`` and the model cards, rendered on the server."""
