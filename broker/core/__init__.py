"""Socket-free core data: topics and subscriptions, history, presence, timers, rate
buckets, statistics.
"""
