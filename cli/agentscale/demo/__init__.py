"""The reference agent stack behind ``target.url: demo``: a mock LLM, tool services and an agent
that shows the resilience patterns (timeouts, retries with backoff, breakers, bulkheads, scoped
caches, explicit fallbacks, guardrails, budgets) and speaks the trace contract."""
