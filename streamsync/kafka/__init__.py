"""Kafka helpers: the local KRaft broker from Maven Central jars and client settings."""
