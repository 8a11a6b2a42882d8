"""The use cases, over the store, the chat layer and the scheduler: generate and chat (`core.Service`), the
requests and answers of a generation, templates bound to models, create, stateful sessions and stored
responses. Every dialect under `server/` calls these."""
