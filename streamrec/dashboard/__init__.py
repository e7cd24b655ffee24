"""`streamrec dashboard`: a live web page over the workers of one consumer group."""
