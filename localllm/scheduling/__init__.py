"""Which models are loaded where: the scheduler (queue, keep-alive, eviction), memory estimates and the
errors of a model that does not fit."""
