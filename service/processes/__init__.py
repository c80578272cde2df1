"""The processes a worker starts beside itself: the prediction log's writer and the monitor."""
