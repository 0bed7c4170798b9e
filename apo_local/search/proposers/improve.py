"""``improve``: data-free "write a better prompt" (the optimizer sees no examples)."""

from apo_local.search.proposers.data_free import DataFreeProposer


class ImproveProposer(DataFreeProposer):
    name = template = "improve"
