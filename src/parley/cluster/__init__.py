"""Many workers, many nodes: the supervisor of ``parley serve --workers N``, the OPTIONS health probe,
Kamailio's configuration and the rolling upgrade (``parley cluster ...``)."""
