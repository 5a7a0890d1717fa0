// Latency of a 4 KiB pwrite + fdatasync, 1000 times: p50 and p99.
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <unistd.h>
#include <time.h>
#include <string.h>
static int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int argc,char**argv){
  const char*path=argc>1?argv[1]:"/tmp/fsync_probe.dat";
  int fd=open(path,O_RDWR|O_CREAT|O_TRUNC,0600); char buf[4096]; memset(buf,1,sizeof buf);
  double t[1000];
  for(int i=0;i<1000;i++){struct timespec a,b;clock_gettime(CLOCK_MONOTONIC,&a);
    pwrite(fd,buf,sizeof buf,(off_t)(i%64)*4096); fdatasync(fd);
    clock_gettime(CLOCK_MONOTONIC,&b); t[i]=(b.tv_sec-a.tv_sec)*1e3+(b.tv_nsec-a.tv_nsec)/1e6;}
  qsort(t,1000,sizeof(double),cmp);
  printf("4KiB pwrite+fdatasync: p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, max %.3f ms\n",t[500],t[900],t[990],t[999]);
  close(fd); unlink(path); return 0;}
