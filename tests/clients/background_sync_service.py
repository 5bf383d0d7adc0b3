import time
import requests
import json
from datetime import datetime
import logging

logging.basicConfig(level=logging.INFO)
logger = logging.getLogger(__name__)

class BackgroundSyncService:
    """خدمة مزامنة خلفية لمزامنة Odoo مع نظام خارجي"""

    def __init__(self, webhook_url, session_id, user_id, external_system_url):
        self.webhook_url = webhook_url
        self.session_id = session_id
        self.user_id = user_id
        self.external_system_url = external_system_url
        self.device_id = "sync-service-001"

    def run(self):
        """تشغيل الخدمة - حلقة لا نهائية"""
        logger.info("🚀 Starting background sync service...")

        while True:
            try:
                self.sync_cycle()
                time.sleep(60)  # كل دقيقة
            except KeyboardInterrupt:
                logger.info("🛑 Service stopped by user")
                break
            except Exception as e:
                logger.error(f"❌ Sync error: {e}")
                time.sleep(10)  # انتظر 10 ثواني قبل المحاولة مرة أخرى

    def sync_cycle(self):
        """دورة مزامنة واحدة"""
        logger.info("🔄 Starting sync cycle...")

        # 1. اجلب التحديثات من Odoo
        updates = self.fetch_updates()

        if not updates['has_updates']:
            logger.info("✅ No new updates")
            return

        logger.info(f"📥 Found {updates['new_events_count']} new events")

        # 2. معالجة كل حدث
        for event in updates['events']:
            try:
                self.process_event(event)
            except Exception as e:
                logger.error(f"❌ Error processing event {event['id']}: {e}")
                # سجل الخطأ ولكن استمر

        logger.info("✅ Sync cycle completed")

    def fetch_updates(self):
        """جلب التحديثات من Webhook Server"""
        response = requests.post(
            f"{self.webhook_url}/api/v2/sync/pull",
            headers={
                "Content-Type": "application/json",
                "X-Session-Id": self.session_id
            },
            json={
                "user_id": self.user_id,
                "device_id": self.device_id,
                "app_type": "manager_app",
                "limit": 100
            }
        )

        response.raise_for_status()
        return response.json()

    def process_event(self, event):
        """معالجة حدث واحد"""
        model = event['model']
        record_id = event['record_id']
        event_type = event['event']

        logger.info(f"Processing: {event_type} on {model} #{record_id}")

        # مزامنة حسب النموذج
        if model == 'res.partner':
            self.sync_customer(record_id, event_type)
        elif model == 'sale.order':
            self.sync_order(record_id, event_type)
        elif model == 'product.template':
            self.sync_product(record_id, event_type)

    def sync_customer(self, customer_id, event_type):
        """مزامنة عميل مع النظام الخارجي"""
        if event_type == 'unlink':
            # حذف من النظام الخارجي
            self.delete_from_external_system('customers', customer_id)
        else:
            # جلب من Odoo
            customer = self.fetch_from_odoo('res.partner', customer_id)

            # إرسال للنظام الخارجي
            self.upsert_to_external_system('customers', customer_id, customer)

    def sync_order(self, order_id, event_type):
        """مزامنة طلب"""
        if event_type == 'unlink':
            self.delete_from_external_system('orders', order_id)
        else:
            order = self.fetch_from_odoo('sale.order', order_id)
            self.upsert_to_external_system('orders', order_id, order)

    def sync_product(self, product_id, event_type):
        """مزامنة منتج"""
        if event_type == 'unlink':
            self.delete_from_external_system('products', product_id)
        else:
            product = self.fetch_from_odoo('product.template', product_id)
            self.upsert_to_external_system('products', product_id, product)

    def fetch_from_odoo(self, model, record_id):
        """جلب سجل من Odoo"""
        # استخدم Odoo JSON-RPC API
        # هذا مثال مبسط
        logger.info(f"Fetching {model} #{record_id} from Odoo")

        # TODO: تنفيذ فعلي
        return {
            'id': record_id,
            'model': model,
            # ... بيانات أخرى
        }

    def upsert_to_external_system(self, resource, record_id, data):
        """إرسال/تحديث في النظام الخارجي"""
        logger.info(f"Upserting {resource} #{record_id} to external system")

        try:
            response = requests.post(
                f"{self.external_system_url}/api/{resource}/{record_id}",
                json=data
            )
            response.raise_for_status()
            logger.info(f"✅ Synced {resource} #{record_id}")
        except Exception as e:
            logger.error(f"❌ Failed to sync {resource} #{record_id}: {e}")
            raise

    def delete_from_external_system(self, resource, record_id):
        """حذف من النظام الخارجي"""
        logger.info(f"Deleting {resource} #{record_id} from external system")

        try:
            response = requests.delete(
                f"{self.external_system_url}/api/{resource}/{record_id}"
            )
            response.raise_for_status()
            logger.info(f"✅ Deleted {resource} #{record_id}")
        except Exception as e:
            logger.error(f"❌ Failed to delete {resource} #{record_id}: {e}")

# الاستخدام
if __name__ == "__main__":
    service = BackgroundSyncService(
        webhook_url="https://webhook-server.propanel.ma",
        session_id="your_session_id_here",
        user_id=2,
        external_system_url="https://external-crm.example.com"
    )

    service.run()
