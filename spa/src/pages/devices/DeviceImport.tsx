// Register many devices from a CSV file; each row's result is shown (imported devices get no credentials).
import { useMutation, useQueryClient } from "@tanstack/react-query";
import { ArrowLeft, Upload } from "lucide-react";
import * as React from "react";
import { Link } from "react-router";
import { PageHeader } from "@/components/page";
import { ErrorState } from "@/components/states";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Textarea } from "@/components/ui/input";
import { Field } from "@/components/ui/label";
import { Table, TBody, TD, TH, THead, TR } from "@/components/ui/table";
import { api } from "@/lib/api";

interface ImportResult {
  created: number;
  failed: number;
  results: { row: number; device_id: string | null; status: "created" | "error"; error?: { field: string | null; message: string } }[];
}

const EXAMPLE = "device_id,name,site_id,device_type,tags,heartbeat_interval_s\ncold-1,Cold room 1,,freezer,cold;kitchen,60\n";

export default function DeviceImport() {
  const [csv, setCsv] = React.useState("");
  const queryClient = useQueryClient();
  const upload = useMutation({
    mutationFn: () =>
      api<ImportResult>("/customer/devices/import", { method: "POST", rawBody: { content: csv, contentType: "text/csv" } }),
    onSuccess: () => {
      void queryClient.invalidateQueries({ queryKey: ["devices"] });
      void queryClient.invalidateQueries({ queryKey: ["fleet-summary"] });
    },
  });
  return (
    <div className="grid gap-4" data-page="device-import">
      <Link to="/devices" className="flex items-center gap-1 text-sm text-muted-foreground hover:underline">
        <ArrowLeft className="size-4" /> Devices
      </Link>
      <PageHeader title="Import devices" description="Up to 5000 rows and 2 MiB. Good rows are kept even when others fail." />
      <Card>
        <CardHeader>
          <CardTitle>CSV file</CardTitle>
          <CardDescription>
            The header names the columns; only <code>device_id</code> is required. Tags are separated by <code>;</code>. Imported
            devices get no credentials: issue them per device when it is installed.
          </CardDescription>
        </CardHeader>
        <CardContent className="grid gap-3">
          <Field label="Choose a file" htmlFor="csv-file">
            <input
              id="csv-file"
              type="file"
              accept=".csv,text/csv"
              className="text-sm"
              onChange={async (e) => {
                const file = e.target.files?.[0];
                if (file) setCsv(await file.text());
              }}
            />
          </Field>
          <Field label="or paste it" htmlFor="csv-text">
            <Textarea id="csv-text" className="min-h-40 font-mono text-xs" placeholder={EXAMPLE} value={csv} onChange={(e) => setCsv(e.target.value)} />
          </Field>
          <div>
            <Button onClick={() => upload.mutate()} disabled={!csv.trim() || upload.isPending}>
              <Upload /> Import
            </Button>
          </div>
        </CardContent>
      </Card>
      {upload.isError && <ErrorState error={upload.error} />}
      {upload.data && (
        <Card>
          <CardHeader>
            <CardTitle>
              {upload.data.created} created, {upload.data.failed} failed
            </CardTitle>
          </CardHeader>
          <Table>
            <THead>
              <TR>
                <TH>Row</TH>
                <TH>Device</TH>
                <TH>Result</TH>
                <TH>Problem</TH>
              </TR>
            </THead>
            <TBody>
              {upload.data.results.map((r) => (
                <TR key={r.row}>
                  <TD className="tabular-nums">{r.row}</TD>
                  <TD className="font-mono">
                    {r.status === "created" && r.device_id ? <Link className="hover:underline" to={`/devices/${encodeURIComponent(r.device_id)}`}>{r.device_id}</Link> : r.device_id ?? "—"}
                  </TD>
                  <TD>{r.status === "created" ? <Badge variant="ok">created</Badge> : <Badge variant="bad">error</Badge>}</TD>
                  <TD className="text-sm">{r.error ? `${r.error.field ? `${r.error.field}: ` : ""}${r.error.message}` : ""}</TD>
                </TR>
              ))}
            </TBody>
          </Table>
        </Card>
      )}
    </div>
  );
}
