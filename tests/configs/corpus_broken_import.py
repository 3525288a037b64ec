"""A node module whose import fails."""

import nanostream_corpus_module_that_does_not_exist  # noqa: F401
