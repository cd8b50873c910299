"""Slack adapter: slack-bolt's async app in front of `core.Engine`.

`app.run_slack` runs it (Socket Mode or HTTP); `bot.SlackBot` decides what each event
means (with `summaries`, `agent`, `admin` and `knowledge` for the features of their
names); `sink.SlackReplySink` streams one answer into a thread; `history` reads Slack;
`format` converts text both ways.
"""
