"""Slack adapter: slack-bolt's async app in front of `core.Engine`.

`app.run_slack` runs it (Socket Mode or HTTP; `http` is HTTP mode's server, `listeners`
the Bolt app's listeners); `bot.SlackBot` decides what each event means (with
`summaries`, `agent`, `admin` and `knowledge` for the features of their names);
`sink.slack_reply` streams one answer into a thread; `history` reads Slack; `format`
converts text both ways.
"""
