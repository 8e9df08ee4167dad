"""The durable outbound queue: `enqueue` (the way in, in the caller's transaction), `claim`
(the delivery engine's side: claim and record), `views` (what the CLI and the API show)."""
