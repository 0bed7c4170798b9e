"""``rewrite``: data-free paraphrase of the prompt (the optimizer sees no examples)."""

from apo_local.search.proposers.data_free import DataFreeProposer


class RewriteProposer(DataFreeProposer):
    name = template = "rewrite"
