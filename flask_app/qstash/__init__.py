"""The QStash path: gateway (official SDK), signature (Receiver), planning, delivery, webhook."""
