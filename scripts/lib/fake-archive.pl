#!/usr/bin/perl
# fake-archive.pl DIR COUNT SEG_SIZE SYSID FULL_FROM FULL_COUNT
#
# Writes an archive of COUNT segments of timeline 1 (segment numbers 1 to COUNT) into DIR, as
# pgrestorewal checks them: each file SEG_SIZE bytes and opening with the long page header its
# name calls for (system SYSID). The files are sparse (header, then a hole), except the
# FULL_COUNT segments from segment number FULL_FROM on, which are written out in full, so that
# copying them costs what copying real WAL costs. Used by scripts/bench.sh.
use strict;
use warnings;

my ($dir, $count, $seg_size, $sysid, $full_from, $full_count) = @ARGV;
die "usage: fake-archive.pl DIR COUNT SEG_SIZE SYSID FULL_FROM FULL_COUNT\n" unless defined $full_count;
my $per_log = 4294967296 / $seg_size;
my $zeros = "\0" x $seg_size;
for my $segno (1 .. $count) {
    my ($log, $seg) = (int($segno / $per_log), $segno % $per_log);
    my $name = sprintf('%08X%08X%08X', 1, $log, $seg);
    my $addr = $segno * $seg_size;
    # XLogLongPageHeaderData: magic, info (XLP_LONG_HEADER), timeline, page address,
    # rem_len, padding, system identifier, segment size, block size.
    my $header = pack('v v V Q< V V Q< V V', 0xD118, 2, 1, $addr, 0, 0, $sysid, $seg_size, 8192);
    open(my $f, '>', "$dir/$name") or die "$dir/$name: $!\n";
    binmode $f;
    if ($segno >= $full_from && $segno < $full_from + $full_count) {
        print $f $header, substr($zeros, length $header) or die "$dir/$name: $!\n";
    } else {
        print $f $header or die "$dir/$name: $!\n";
        truncate($f, $seg_size) or die "$dir/$name: $!\n";
    }
    close($f) or die "$dir/$name: $!\n";
}
