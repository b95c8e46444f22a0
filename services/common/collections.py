"""Collection names, in one place: the bot writes where the API counts, and `botstack restore`
knows which ones are the platform's own state and history (services/cli/backups.py)."""

# The data: what users and handlers wrote.
USERS = "users"
MESSAGES = "messages"
CONTEXTS = "user_contexts"
EVENTS = "events"

# The platform's state: the updates on their way (services/bot/inbox.py), who polls
# (services/bot/lease.py), each program's last readiness write (services/common/db.py).
INBOX = "inbox"
INBOX_CLAIMS = "inbox_claims"
LEASES = "bot_leases"
READINESS = "readiness"

# The platform's history: what the sidecar saw, the deploys, the admins' actions.
HEALTH_EVENTS = "health_events"
DEPLOYS = "deploys"
AUDIT = "audit"
