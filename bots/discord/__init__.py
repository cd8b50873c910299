"""The Discord adapter: `teambot discord` (see `bots.discord.app.run_discord`)."""
