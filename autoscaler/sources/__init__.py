"""Where the queue signals come from (Redis streams of our own protocol, or plain lists)."""
