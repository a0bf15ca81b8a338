"""The workflow-side half of step semantics: the ``step`` object workflow code calls, and both
halves of the step wire between an isolate and the engine. It runs wherever the workflow's code
runs (in the host for plain workflows, in a tenant's isolate for dynamic ones), so it imports
nothing stateful: the rules, the clock, RPC and errors only."""
