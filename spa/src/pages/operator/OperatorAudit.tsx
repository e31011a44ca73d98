import { AuditTable } from "@/pages/admin/AuditLog";

export default function OperatorAudit() {
  return <AuditTable path="/operator/audit-log" title="Operator audit log" description="Every operator request, including reads and refusals." withTenant />;
}
