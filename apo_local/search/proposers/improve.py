"""``improve``: data-free "write a better prompt" (the optimizer sees no examples)."""

from apo_local.search.proposers.data_free import DataFreeProposer, data_free_method


class ImproveProposer(DataFreeProposer):
    name = template = "improve"


METHOD = data_free_method(ImproveProposer, rank=4)
