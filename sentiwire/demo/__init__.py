"""``make demo``: a local Kafka broker, the daemon with alerts on, real messages at a steady
rate with a scripted negative burst about one ticker, and labels + alerts live on screen.

``config`` holds the topics, options and daemon config, ``screen`` the live view, ``feeds``
what the view reads (topics, /readyz, /metrics), ``runner`` starts and stops everything in
order.
"""
