"""What every service shares: settings, logs, metrics and health, Kafka client configuration, the
contract's names. It imports no service."""
