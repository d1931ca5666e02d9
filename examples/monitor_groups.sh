#!/bin/bash
# Monitor consumer group lag and health: the Kafka patterns document's script with brokerlab commands.
BOOTSTRAP_SERVER="${BROKERLAB_BOOTSTRAP:-127.0.0.1:9100}"
GROUP_ID="${1:-order-processor}"
TOPIC="${2:-order-events}"

echo "=== Consumer Group Monitor ==="
echo "Timestamp: $(date)"
echo ""
echo "--- Active Consumer Groups ---"
brokerlab groups --bootstrap-server "$BOOTSTRAP_SERVER" --list
echo ""
echo "--- Group Details: $GROUP_ID ---"
# Partition assignments, current offset, log-end offset, lag
brokerlab groups --bootstrap-server "$BOOTSTRAP_SERVER" --group "$GROUP_ID" --describe
echo ""
echo "--- Group State ---"
# State (Stable, PreparingRebalance, Empty, Dead), assignor and member count
brokerlab groups --bootstrap-server "$BOOTSTRAP_SERVER" --group "$GROUP_ID" --describe --state
echo ""
echo "--- Members ---"
brokerlab groups --bootstrap-server "$BOOTSTRAP_SERVER" --group "$GROUP_ID" --describe --members --verbose
echo ""
echo "--- Reset Offsets (Dry Run) ---"
brokerlab groups --bootstrap-server "$BOOTSTRAP_SERVER" --group "$GROUP_ID" \
  --topic "$TOPIC:0" --reset-offsets --to-earliest --dry-run
echo ""
echo "--- Reset Offsets (Execute) ---"
# Refused while the group has active members: stop the consumers first.
# brokerlab groups --bootstrap-server "$BOOTSTRAP_SERVER" --group "$GROUP_ID" \
#   --topic "$TOPIC:0" --reset-offsets --to-earliest --execute
#
# Lag redrawn every 2 s until Ctrl-C:
# brokerlab groups --bootstrap-server "$BOOTSTRAP_SERVER" --group "$GROUP_ID" --describe --watch 2
