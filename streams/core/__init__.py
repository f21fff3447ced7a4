"""The pure core: the wire contract, the rule table and its one interpreter, the aggregates.

No faust, no Kafka client, no HTTP: everything here is plain functions over plain data.
"""
