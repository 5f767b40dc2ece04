"""Alert e-mails: composing them (``compose``) and delivering the outbox (``sender``)."""
