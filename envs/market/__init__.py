"""The GPU market: messages, credits, leases, the auction and bargaining mechanisms."""
