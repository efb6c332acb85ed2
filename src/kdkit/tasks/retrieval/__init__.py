"""The retrieval task (:mod:`.task`): queries, a passage corpus and relevance judgements (:mod:`.data`), evaluated
over the full corpus (:mod:`.evaluation`, :mod:`kdkit.report.retrieval`), exported for sentence-transformers
(:mod:`.export`).

``kdkit.tasks`` imports this package whenever any task is loaded, so nothing here may import the optional
retrieval libraries (faiss, bm25s, ir_measures, sentence_transformers) at module level: they are imported inside
the functions that use them.
"""

from kdkit.tasks.retrieval.task import (RetrievalConfig, RetrievalDataConfig, RetrievalRecipe, RetrievalTask,
                                        load_data)

__all__ = ["RetrievalConfig", "RetrievalDataConfig", "RetrievalRecipe", "RetrievalTask", "load_data"]
