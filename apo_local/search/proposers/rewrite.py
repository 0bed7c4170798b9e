"""``rewrite``: data-free paraphrase of the prompt (the optimizer sees no examples)."""

from apo_local.search.proposers.data_free import DataFreeProposer, data_free_method


class RewriteProposer(DataFreeProposer):
    name = template = "rewrite"


METHOD = data_free_method(RewriteProposer, rank=3)
