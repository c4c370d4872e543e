"""The WebSocket close codes the broker sends, receives and reports, in one place (as
wsproto's ``CloseReason``): RFC 6455 section 7.4.1's, and the broker's own 4001-4003."""

import enum


class CloseCode(enum.IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001  # shutdown, lame duck
    PROTOCOL_ERROR = 1002
    NO_STATUS = 1005  # a close frame without a code: never sent as a code
    ABNORMAL = 1006  # no close frame at all: never sent
    INVALID_DATA = 1007  # text that is not UTF-8
    POLICY_VIOLATION = 1008  # a slow consumer
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TLS_FAILURE = 1015  # never sent
    TOKEN_EXPIRED = 4001  # the client's credentials expired (docs/protocol.md)
    # The application's backend disconnected the client (the control API): it may
    # reconnect, or it must not (a banned user: clients stop).
    DISCONNECTED_MAY_RECONNECT = 4002
    DISCONNECTED_DO_NOT_RECONNECT = 4003


# Codes that say something about this end's connection only: never in a close frame.
LOCAL_ONLY = frozenset({CloseCode.NO_STATUS, CloseCode.ABNORMAL, CloseCode.TLS_FAILURE})
