"""The QStash path: gateway (official SDK), signature (Receiver), planning, publish,
relay, DLQ and the webhook."""
