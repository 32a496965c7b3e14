"""The load engine. ``launcher`` runs in the CLI process; everything else in the child."""
