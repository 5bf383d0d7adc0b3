"""Runs the seed's background sync service (background_sync_service.py, copied verbatim from
the seed document) against a test server: only its URLs and session differ from the seed.

usage: run_background_service.py SYNC_URL SESSION_ID USER_ID CRM_URL CYCLES

Each cycle is the service's own sync_cycle(); the seed's run() loop only adds sleeps around it.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from background_sync_service import BackgroundSyncService  # noqa: E402


def main() -> None:
    sync_url, session_id, user_id, crm_url, cycles = sys.argv[1:6]
    service = BackgroundSyncService(
        webhook_url=sync_url,
        session_id=session_id,
        user_id=int(user_id),
        external_system_url=crm_url,
    )
    for _ in range(int(cycles)):
        service.sync_cycle()


if __name__ == "__main__":
    main()
