#!/usr/bin/perl
# An integrator's client generated from docs/openapi.yaml alone: Perl's
# OpenAPI::Client (Debian libopenapi-client-perl) reads the document and
# makes one method per operationId, validating every request against the
# document before it leaves. Through the real gateway, this sends a referral
# (sendMessage), reads its receipt (getReceipt) until the broker has
# answered, and checks both replies against the document's response schemas.
#
# Usage: openapi_client_test.pl OPENAPI_YAML BASE_URL TOKEN_FILE CA_FILE RECIPIENT
# Prints "ok: ..." lines; exits 0 when the referral was stored for RECIPIENT.
use strict;
use warnings;
use OpenAPI::Client;
use Mojo::File qw(path);
use Time::HiRes qw(sleep time);

@ARGV == 5 or die "usage: $0 OPENAPI_YAML BASE_URL TOKEN_FILE CA_FILE RECIPIENT\n";
my ($spec, $base_url, $token_file, $ca_file, $recipient) = @ARGV;

my $token = path($token_file)->slurp;
$token =~ s/\s+\z//;
my $client = OpenAPI::Client->new($spec, base_url => $base_url);
$client->ua->ca($ca_file);
$client->ua->request_timeout(10);
$client->on(after_build_tx => sub { $_[1]->req->headers->authorization("Bearer $token") });

# A response against what the document says of this operation and status.
sub check_response {
  my ($method, $route, $tx) = @_;
  my $res = $tx->res;
  my @errors = $client->validator->validate_response(
    [$method, $route, $res->code],
    {
      body => sub {
        return {exists => length($res->body) > 0, value => $res->json,
                accept => $res->headers->content_type // 'application/json'};
      },
      header => sub { my ($name) = @_; my $v = $res->headers->header($name); return {exists => defined $v, value => $v} },
    }
  );
  die "FAIL: $method $route answered ${\$res->code} not as docs/openapi.yaml says: @errors\n${\$res->body}\n" if @errors;
}

# A request the document does not allow is refused by the client itself:
# the generated method validates it and sends nothing.
my $bad = $client->sendMessage({body => {id => 'not allowed: spaces', payload_type => 'CaseReferral'}});
(($bad->res->error // {})->{message} // '') eq 'Invalid input'
  or die "FAIL: the generated client sent an id the document forbids\n";
my $why = $bad->res->json->{errors}[0];
print "ok: the generated client refuses a request the document forbids ($why->{path}: $why->{message})\n";

my $id = sprintf('oapi-%d-%d', time() * 1000, $$);
my $referral = {
  id           => $id,
  case_ref     => 'CASE-OAPI-1',
  to           => [{agency => $recipient}],
  purpose      => 'case-coordination',
  payload_type => 'CaseReferral',
  payload      => {
    subject            => {pseudonym => 'P-OAPI-1'},
    reason             => 'wants to leave the group',
    requested_services => ['mentoring'],
  },
};
my $sent = $client->sendMessage({body => $referral});
die "FAIL: sendMessage: " . ($sent->error ? $sent->error->{message} : '') . " " . ($sent->res->body // '') . "\n"
  unless ($sent->res->code // 0) == 202;
check_response(post => '/v1/messages', $sent);
my $accepted = $sent->res->json;
$accepted->{message_id} eq $id or die "FAIL: accepted as $accepted->{message_id}, sent as $id\n";
print "ok: sendMessage 202, message_id $id, receipt_url $accepted->{receipt_url}\n";

# The broker's receipt: 202 (pending) until it answers; at most 10 s.
my ($receipt, $deadline) = (undef, time() + 10);
while (time() < $deadline) {
  my $tx = $client->getReceipt({id => $id});
  my $code = $tx->res->code // 0;
  die "FAIL: getReceipt answered $code: " . ($tx->res->body // '') . "\n" unless $code == 200 || $code == 202;
  check_response(get => '/v1/messages/{id}/receipt', $tx);
  if ($code == 200) { $receipt = $tx->res->json; last }
  sleep 0.1;
}
defined $receipt or die "FAIL: no receipt for $id within 10 s\n";
$receipt->{message_id} eq $id or die "FAIL: receipt for $receipt->{message_id}\n";
my ($for) = grep { ($_->{recipient} // '') eq $recipient } @{$receipt->{recipients} // []};
defined $for or die "FAIL: the receipt names no recipient $recipient\n";
($for->{code} // '') eq 'stored' or die "FAIL: $recipient: code " . ($for->{code} // 'none') . "\n";
print "ok: getReceipt 200, $recipient: stored, from $receipt->{from}, released: @{$for->{released} // []}\n";
